fn main() {
    std::process::exit(reapi_conformance::cli::main());
}
