//! Shell completion and man pages from `examples/generate.rs`, made from
//! the clap definitions: every mode and flag the binary parses shows up.

mod common;

use std::process::Command;

use common::*;

fn generate(args: &[&str]) -> (i32, String, String) {
    let tool = bin().parent().unwrap().join("examples/generate");
    assert!(
        tool.exists(),
        "{} missing: run through cargo test",
        tool.display()
    );
    let mut cmd = Command::new(tool);
    cmd.args(args);
    output_with_deadline(cmd)
}

#[test]
fn completions_know_every_mode_and_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = generate(&["completions", shell]);
        assert_eq!((code, err.as_str()), (0, ""), "{shell}");
        for word in ["ctl", "bpm", "probe", "job-name", "stop-timeout"] {
            assert!(out.contains(word), "{shell}: {word} missing");
        }
        // Fish completes flags and modes only; the others the verbs too.
        if shell != "fish" {
            for verb in ["restart", "running"] {
                assert!(out.contains(verb), "{shell}: {verb} missing");
            }
        }
    }
    let (_, script, _) = generate(&["completions", "bash"]);
    let (code, _, err) = {
        let t = TempDir::new();
        let file = t.file("completion.bash");
        std::fs::write(&file, script).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-n").arg(&file);
        output_with_deadline(cmd)
    };
    assert_eq!(code, 0, "bash -n: {err}");
    let (code, _, err) = generate(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

/// What bash's completion offers after `words` (the last one being the
/// word under the cursor), with the generated script sourced as a user's
/// shell sources it.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let driver = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
COMPREPLY=()
_container__run container-run "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s
' "${COMPREPLY[@]}""#;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(driver)
        .arg("bash")
        .arg(script)
        .args(words);
    let (code, out, err) = output_with_deadline(cmd);
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_past_the_mode() {
    let (code, script, _) = generate(&["completions", "bash"]);
    assert_eq!(code, 0);
    let t = TempDir::new();
    let file = t.file("completion.bash");
    std::fs::write(&file, script).unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["container-run", ""],
            &["ctl", "bpm", "monit", "probe", "install"],
        ),
        (
            &["container-run", "ctl", ""],
            &["start", "stop", "wait", "--all", "--except"],
        ),
        (&["container-run", "bpm", ""], &["pid", "running", "list"]),
        (
            &["container-run", "monit", "s"],
            &["summary", "status", "start", "stop"],
        ),
        (
            &["container-run", "probe", "--"],
            &["--base-dir", "--trust-uid"],
        ),
    ];
    for (words, want) in cases {
        let got = bash_completes(&file, words);
        for w in *want {
            assert!(got.iter().any(|g| g == w), "{words:?}: {w} not in {got:?}");
        }
    }
    // What a word does not start with is not offered.
    let got = bash_completes(&file, &["container-run", "monit", "s"]);
    assert!(!got.iter().any(|g| g == "restart"), "{got:?}");
}

#[test]
fn man_pages_for_the_binary_and_each_mode() {
    let (code, out, _) = generate(&["man"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains("\n.TH container-run 1"),
        "{out}"
    );
    assert!(out.contains("\\-\\-job\\-name"), "{out}");
    let t = TempDir::new();
    let (code, _, err) = generate(&["man", t.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "container-run.1",
        "container-run-ctl.1",
        "container-run-bpm.1",
        "container-run-probe.1",
    ] {
        let text = std::fs::read_to_string(t.file(page)).unwrap_or_default();
        assert!(text.contains(".TH "), "{page}: {text}");
    }
}
