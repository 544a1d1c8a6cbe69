//! The command line: clap commands, output formats and exit codes. `anyhow`
//! lives here and in `main`; everything below returns typed errors.

pub mod exit;
pub mod load;
mod plan;
mod sim;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use exit::{CliError, CliResult, Exit};

/// Multi-cluster blue-green rollouts for Kubernetes, gated on metrics, tier
/// policy and deploy freezes.
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the timeline a release will follow, step by step.
    Plan(plan::PlanArgs),
    /// Print the CustomResourceDefinitions cutover uses.
    Crd,
    /// Run a simulated fleet to rehearse on.
    Sim(sim::SimArgs),
}

/// How a command reports.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON document (or JSON lines for streams).
    Json,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Ok };
            return ExitCode::from(code.code());
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Crd => crd(),
        Command::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(e.exit.code())
        }
    }
}

fn crd() -> CliResult {
    use kube::CustomResourceExt;
    let yaml = serde_saphyr::to_string(&crate::spec::Release::crd())?;
    print!("---\n{yaml}");
    Ok(Exit::Ok)
}
