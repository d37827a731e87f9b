//! `parley-loadtest`: the Parley load-test harness.
//!
//! Creates users and rooms through the HTTP API, opens WebSocket sessions
//! spread over the given nodes, runs a scenario, checks every delivery
//! against the contract's guarantees, and reports latency, throughput,
//! errors, CPU and memory. See `loadtest/README.md`.
//!
//! Exit status: 0 when the checker found nothing, 1 when it found
//! violations, 2 when the run could not be carried out.

mod api;
mod bench;
mod chaos;
mod checker;
mod cli;
mod client;
mod diskprobe;
mod metrics;
mod nodeproc;
mod plan;
mod plot;
mod ports;
mod progress;
mod report;
mod runner;
mod setup;
mod sysinfo;
mod wsconn;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>*?".contains(c))
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn main_inner() -> anyhow::Result<bool> {
    let cli = cli::Cli::parse();
    let command = command_line();
    if let cli::Command::Bench(b) = &cli.command {
        return bench::run(b, command).await.context("bench");
    }
    let Some((scenario, args)) = cli.command.scenario() else {
        anyhow::bail!("unknown command");
    };
    let report = runner::run(scenario, args, command)
        .await
        .with_context(|| format!("scenario {}", scenario.name()))?;
    print!("{}", report.table());
    if let Some(path) = &args.report {
        runner::write_report(path, &report)
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(report.passed())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parley-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(main_inner()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("parley-loadtest: correctness violations found");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("parley-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
