#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cutover::cli::main()
}
