//! `cutover demo` in a build without the `rehearsal` feature (the controller
//! image): there is no simulated fleet to rehearse on, so the command says
//! how to get a build that has one instead of failing obscurely.

use super::exit::{CliError, CliResult, Exit};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Whatever was asked of the demo; this build cannot run it.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub async fn run(_args: &DemoArgs) -> CliResult {
    Err(CliError::new(
        Exit::Usage,
        anyhow::anyhow!(
            "this cutover was built without the simulated fleet (the `rehearsal` feature), \
         so it cannot run the demo; build one with it (`cargo build --release`, the default \
         features) or run `cargo run --release -- demo` from a checkout"
        ),
    ))
}
