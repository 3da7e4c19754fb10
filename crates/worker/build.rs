//! The Remote Workers API protos in the workspace's `proto/`, compiled with a
//! pure-Rust compiler (protox): no system protoc.

fn main() {
    // Read at run time: a build script binary may be reused for another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        "google/devtools/remoteworkers/v1test2/bots.proto",
        "google/devtools/remoteworkers/v1test2/worker.proto",
        "google/rpc/status.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(&files[..2], [&root]).unwrap_or_else(|e| panic!("compiling proto/: {e}"));
    tonic_prost_build::configure()
        // Otherwise prost maps .google.protobuf to prost-types itself and refuses the mapping below.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::bazel_remote_apis::google::protobuf")
        .extern_path(".google.rpc", "::bazel_remote_apis::google::rpc")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Remote Workers API code: {e}"));
}
