//! Shell completion scripts and man pages for container-run, made from the
//! clap definitions that parse its command line (`modes::command_tree`).
//! An example rather than a mode of the binary: it would add 185 KB (11 %)
//! to the static binary that every job image carries (README, "Completion
//! and man pages").
//!
//!   cargo run -q --example generate -- completions bash|zsh|fish|elvish|powershell
//!   cargo run -q --example generate -- man [DIR]

use std::io::Write;
use std::process::ExitCode;

use clap_complete::Shell;

const USAGE: &str =
    "usage: generate completions bash|zsh|fish|elvish|powershell | generate man [DIR]";

/// clap_complete's bash script names a subcommand's state two ways when
/// the program's name has a hyphen: it dispatches to
/// `container__run__subcmd__ctl` but labels that case
/// `container__subcmd__run__subcmd__ctl`, so nothing past the mode would
/// complete. The labels are renamed to what the dispatch uses.
fn mend_bash(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("container__subcmd__run__", "container__run__")
        .into_bytes()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = container_run::modes::command_tree();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["completions", shell] => match shell.parse::<Shell>() {
            Ok(shell) => {
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut cmd, "container-run", &mut out);
                if shell == Shell::Bash {
                    out = mend_bash(&out);
                }
                std::io::stdout().write_all(&out)
            }
            Err(_) => {
                eprintln!("generate: unknown shell '{shell}'\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ["man"] => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| std::io::stdout().write_all(&out))
        }
        // One page per mode: container-run.1, container-run-ctl.1, ...
        ["man", dir] => clap_mangen::generate_to(cmd, dir),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("generate: {USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::from(1)
        }
    }
}
