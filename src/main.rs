//! The `bankgate` binary; everything it does lives in the library (`bankgate::cli`).

fn main() -> std::process::ExitCode {
    bankgate::cli::main()
}
