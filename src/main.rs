use clap::Parser;

fn main() {
    let cli = teamaccess::cli::Cli::parse();
    std::process::exit(teamaccess::cli::main(cli));
}
