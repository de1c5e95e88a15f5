//! Every mode of the binary as one clap command tree, for the completion
//! scripts and man pages that `examples/generate.rs` makes. It sits above
//! the modes it gathers (the supervisor's command line, the clients,
//! install), so that none of them depends on another.

/// Every mode of the binary as one clap command tree, for the completion
/// scripts and man pages that `examples/generate.rs` makes: the
/// supervisor's flags at the top, `ctl`, `bpm` and `probe` below it. The
/// binary itself dispatches on the first word instead (main.rs), so that
/// each mode keeps its own usage line and exit codes.
pub fn command_tree() -> clap::Command {
    use clap::CommandFactory;
    crate::cli::RunArgs::command()
        .subcommand(crate::client::ctl::CtlArgs::command().name("ctl"))
        .subcommand(crate::client::bpm::BpmArgs::command().name("bpm"))
        .subcommand(crate::client::monit::MonitArgs::command().name("monit"))
        .subcommand(crate::client::probe::ProbeArgs::command().name("probe"))
        .subcommand(crate::install::InstallArgs::command().name("install"))
        .subcommand(crate::logs::LogsArgs::command().name("logs"))
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true)
}
