//! `loadtest run`: a global treasure hunt through the whole pipeline, measured, then checked
//! against the shards' own logs (the hunt itself is [`crate::harness::hunt`]).

use crate::harness::hunt;

/// Options of `loadtest run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    hunt: hunt::Options,
}

/// `loadtest run`: the hunt, the report, and a failure when any check fails.
///
/// # Errors
/// When a part cannot be started or reached, a report cannot be written, or a check failed.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let report = hunt::execute(&args.hunt).await?;
    report.finish(&args.hunt.json, &args.hunt.svg, args.hunt.fail_on_goal)
}
