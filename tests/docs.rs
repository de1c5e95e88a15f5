//! Every shell command in docs/*.md, run in order against real
//! container-runs: the docs say only what the binary does. `/var/vcap` in a
//! command becomes the test's base directory; a stand-in `kubectl` runs the
//! command after `--` locally and lists one pod. A trailing `# exits N`
//! gives the exit code a command must have (0 otherwise).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The lines of every ```sh block, with their line numbers.
fn shell_lines(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
            continue;
        }
        if in_sh && !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push((i + 1, trimmed.to_string()));
        }
    }
    out
}

fn expected_exit(line: &str) -> i32 {
    line.split("# exits ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn install_tools(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(bin(), dir.join("container-run")).unwrap();
    std::os::unix::fs::symlink(bin(), dir.join("bpm")).unwrap();
    let kubectl = dir.join("kubectl");
    std::fs::write(
        &kubectl,
        "#!/bin/sh\ncase \"$1\" in\n  get) echo pod/nats-0 ;;\n  exec) while [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\" ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn every_shell_command_in_the_docs_works() {
    let t = TempDir::new();
    let base = t.file("vcap");
    let tools = t.file("bin");
    install_tools(&tools);
    let nats = Run::builder(&base, "nats").spawn([child()]);
    let rr = Run::builder(&base, "route_registrar").spawn([child()]);
    nats.wait_running();
    rr.wait_running();
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut ran = 0;
    for name in ["kubernetes.md", "migrating.md"] {
        let text = std::fs::read_to_string(docs.join(name)).unwrap();
        for (line_no, line) in shell_lines(&text) {
            let command = line.replace("/var/vcap", &base.display().to_string());
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(&command)
                .env("PATH", &path)
                .env("CONTAINER_RUN_BASE_DIR", &base)
                .current_dir(t.path());
            let (code, out, err) = output_with_deadline(cmd);
            assert_eq!(
                code,
                expected_exit(&line),
                "docs/{name}:{line_no}: {line}\nstdout: {out}\nstderr: {err}"
            );
            ran += 1;
        }
        assert_eq!(
            try_request(&nats.files.socket, "STATUS").map(|s| s["state"].clone()),
            Some("running".into()),
            "docs/{name} leaves nats running; its log:\n{}",
            nats.stderr_text()
        );
    }
    assert!(ran >= 20, "only {ran} commands found");
}

#[test]
fn shell_blocks_are_found_and_exit_codes_read() {
    let md = "text\n```sh\na\n\n# comment\nb   # exits 1\n```\n```yaml\nc\n```\n";
    let lines = shell_lines(md);
    assert_eq!(
        lines,
        [(3, "a".to_string()), (6, "b   # exits 1".to_string())]
    );
    assert_eq!(expected_exit(&lines[1].1), 1);
    assert_eq!(expected_exit("x"), 0);
}
