//! `flashcard-operator`: `crd` prints the CRD, `run` runs the controller.

mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flashcard-operator",
    version,
    about = "Operator for FlashcardPipeline resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinition as YAML (`flashcard-operator crd | kubectl apply -f -`).
    Crd {
        /// Print the Helm chart's template instead (gated by crds.install / crds.keep).
        #[arg(long)]
        helm: bool,
    },
    /// Run the controller (with leader election, /metrics, /healthz and /readyz).
    Run(Box<run::RunArgs>),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { helm } => {
            let yaml = if helm {
                flashcard_operator::crdgen::helm_template()?
            } else {
                flashcard_operator::crdgen::crd_yaml()?
            };
            print!("{yaml}");
        }
        Command::Run(args) => run::run(*args).await?,
    }
    Ok(())
}
