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
mod outfile;
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
use report::Verdict;

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

async fn main_inner() -> anyhow::Result<Verdict> {
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
    Ok(report.verdict())
}

/// An error and its causes on one line. The harness's error types spell
/// out their cause in their own message (reports quote them alone), so a
/// cause already quoted by an outer message is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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
        Ok(Verdict::Passed) => ExitCode::SUCCESS,
        Ok(Verdict::Violations) => {
            eprintln!("parley-loadtest: correctness violations found");
            ExitCode::from(1)
        }
        Ok(Verdict::Incomplete(why)) => {
            eprintln!("parley-loadtest: the run was incomplete: {why}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("parley-loadtest: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("setup: {0}")]
        Setup(#[from] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("register: {source}")]
    struct Inner {
        source: std::io::Error,
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::from(Outer::from(Inner { source: io })).context("scenario fanout");
        assert_eq!(error_text(&e), "scenario fanout: setup: register: refused");
        // A cause that adds something is kept.
        let e = anyhow::anyhow!("inner detail").context("outer");
        assert_eq!(error_text(&e), "outer: inner detail");
    }
}
