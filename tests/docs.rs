//! Every shell command in docs/*.md, run in order against real
//! container-runs: the docs say only what the binary does. `/var/vcap` in a
//! command becomes the test's base directory; a stand-in `kubectl` runs the
//! command after `--` locally and lists one pod. A trailing `# exits N`
//! gives the exit code a command must have (0 otherwise). The same page's
//! pod runs in a real container engine in tests/pod/run.sh.

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

/// The init containers' commands in the YAML: a JSON list on one
/// `command:` line whose second word is `install`.
fn install_commands(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .filter_map(|list| serde_json::from_str::<Vec<String>>(list).ok())
        .filter(|c| c.get(1).map(String::as_str) == Some("install"))
        .collect()
}

/// A stand-in `kubectl` in `dir`; with `dev_tools` also `container-run` and
/// `bpm` (migrating.md runs them from PATH; a job's image has neither).
fn install_tools(dir: &Path, dev_tools: bool) {
    std::fs::create_dir_all(dir).unwrap();
    if dev_tools {
        std::os::unix::fs::symlink(bin(), dir.join("container-run")).unwrap();
        std::os::unix::fs::symlink(bin(), dir.join("bpm")).unwrap();
    }
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
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let system_path = std::env::var("PATH").unwrap_or_default();

    // The init container's step, as the page writes it; `/container-run`
    // is the binary in the image it runs in.
    let kubernetes = std::fs::read_to_string(docs.join("kubernetes.md")).unwrap();
    let installs = install_commands(&kubernetes);
    assert!(
        installs.len() >= 2,
        "init containers on the page: {installs:?}"
    );
    assert!(installs.iter().all(|c| c == &installs[0]), "{installs:?}");
    assert_eq!(installs[0][0], "/container-run");
    let mut init = Command::new(bin());
    init.args(
        installs[0][1..]
            .iter()
            .map(|a| a.replace("/var/vcap", &base.display().to_string())),
    );
    assert_eq!(output_with_deadline(init).0, 0);
    assert!(base.join("data/container-run/container-run").exists());

    let nats = Run::builder(&base, "nats").spawn([child()]);
    let rr = Run::builder(&base, "route_registrar").spawn([child()]);
    nats.wait_running();
    rr.wait_running();

    let mut ran = 0;
    for (name, dev_tools) in [("kubernetes.md", false), ("migrating.md", true)] {
        let tools = t.file(&format!("bin-{name}"));
        install_tools(&tools, dev_tools);
        let path = format!("{}:{system_path}", tools.display());
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

#[test]
fn install_commands_are_found() {
    let md = "```yaml\n  command: [\"/c\", \"install\", \"/d\"]\n  command: [\"/c\"]\n```\n";
    assert_eq!(install_commands(md), [["/c", "install", "/d"]]);
}

fn page(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The seed's use case is two commands on every page that shows how to
/// stop jobs (the docs/ pages run in `every_shell_command_in_the_docs_works`);
/// the README's block is run here against a pod with a database.
#[test]
fn the_seeds_use_case_is_two_commands_everywhere_and_they_work() {
    for name in ["README.md", "docs/kubernetes.md", "docs/migrating.md"] {
        let blocks = sh_blocks(&page(name), false);
        let seed = blocks.iter().find(|b| {
            b.iter().any(|l| l.contains("ctl stop --all --except "))
                && b.iter().any(|l| l.contains("ctl start --all"))
        });
        assert!(seed.is_some_and(|b| b.len() == 2), "{name}: {blocks:?}");
    }
    let blocks = sh_blocks(&page("README.md"), false);
    let seed = blocks
        .iter()
        .find(|b| b.iter().any(|l| l.contains("--except")))
        .unwrap();
    let t = TempDir::new();
    let base = t.file("vcap");
    let db = Run::builder(&base, "database").spawn([child()]);
    let api = Run::builder(&base, "api").spawn([child()]);
    let db_pid = db.wait_running();
    api.wait_running();
    let path = path_with_container_run(&t);
    for (i, line) in seed.iter().enumerate() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(line.replace("/var/vcap", &base.display().to_string()))
            .env("PATH", &path);
        let (code, _, err) = output_with_deadline(cmd);
        assert_eq!(code, 0, "README: {line}: {err}");
        let want = if i == 0 { "stopped" } else { "running" };
        assert_eq!(api.status()["state"], want, "after {line}");
        assert_eq!(db.status()["pid"], db_pid, "the database is left alone");
    }
}

/// What the README says `ctl status` prints is what it prints.
#[test]
fn the_readme_names_the_status_columns_ctl_prints() {
    let t = TempDir::new();
    let run = Run::builder(t.path(), "job").spawn([child()]);
    run.wait_running();
    let (code, out, _) = run_to_end(&[
        os("ctl"),
        os("status"),
        os("job"),
        os("--base-dir"),
        t.path().as_os_str(),
    ]);
    assert_eq!(code, 0);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    let readme = page("README.md");
    assert!(
        readme.contains(&format!("`{}`", header.join(" "))),
        "README does not name the columns {header:?}"
    );
}

/// The static binary's size the README quotes, within 3 %, once it is built
/// (`.ci/run` builds it before the tests).
#[test]
fn the_readme_quotes_the_static_binarys_size() {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/static/container-run");
    let Ok(meta) = std::fs::metadata(&built) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI builds target/static before the tests"
        );
        eprintln!("skipped: no target/static/container-run (scripts/build-static)");
        return;
    };
    let readme = page("README.md");
    let quoted = readme
        .split("the static binary is ")
        .nth(1)
        .and_then(|rest| rest.split(" bytes").next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("README: \"the static binary is N bytes\"");
    let real = meta.len();
    let off = quoted.abs_diff(real) as f64 / real as f64;
    assert!(
        off < 0.03,
        "README says {quoted} bytes, the binary has {real}"
    );
}
