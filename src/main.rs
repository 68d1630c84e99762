use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = carepay::cli::Cli::parse();
    match carepay::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("carepay: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
