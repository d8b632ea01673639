//! `kycq`: parse the command line and run it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kycq::cli::Cli::parse();
    match kycq::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kycq: {e:#}");
            std::process::ExitCode::from(kycq::cli::exit_code(&e))
        }
    }
}
