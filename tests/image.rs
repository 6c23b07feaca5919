//! The image that `make image-test` builds and runs here must be the image
//! that ships: Dockerfile (for machines that pull a builder image) and
//! Containerfile.local (for machines that cannot) share one runtime stage,
//! byte for byte, and the static binary is built with the same flags by both.

use std::path::Path;

use serde_json::Value;

const MARKER: &str = "# ---- runtime stage";

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// From the marker line to the end of the file: the runtime stage must be the
/// last one, or a later stage would be what `docker build` ships.
fn runtime_stage<'a>(file: &str, text: &'a str) -> &'a str {
    let starts: Vec<usize> = text.match_indices(MARKER).map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 1, "{file}: exactly one `{MARKER}` line");
    let stage = &text[starts[0]..];
    let froms: Vec<&str> = stage.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms,
        ["FROM scratch AS runtime"],
        "{file}: the runtime stage is the last stage and starts from scratch"
    );
    stage
}

#[test]
fn dockerfile_and_containerfile_local_ship_the_same_runtime_stage() {
    let docker = read("Dockerfile");
    let local = read("Containerfile.local");
    assert_eq!(
        runtime_stage("Dockerfile", &docker),
        runtime_stage("Containerfile.local", &local),
        "the runtime stages of Dockerfile and Containerfile.local differ: \
         `make image-test` would test an image that does not ship"
    );
}

/// The value after `key` on the first line holding it, without quotes.
fn value_after<'a>(file: &str, text: &'a str, key: &str) -> &'a str {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .unwrap_or_else(|| panic!("{file}: no line starting with `{key}`"));
    line.trim().trim_matches('"')
}

#[test]
fn the_static_binary_is_built_alike_for_docker_and_for_image_test() {
    let docker = read("Dockerfile");
    let script = read("hack/image-test.sh");
    let flags = value_after("Dockerfile", &docker, "ENV RUSTFLAGS=");
    assert_eq!(flags, "-C target-feature=+crt-static");
    assert_eq!(
        value_after("hack/image-test.sh", &script, "STATIC_RUSTFLAGS="),
        flags,
        "hack/image-test.sh builds with Dockerfile's RUSTFLAGS"
    );
    let target = value_after("Dockerfile", &docker, "ARG TARGET=");
    assert_eq!(target, "x86_64-unknown-linux-gnu");
    assert_eq!(
        value_after("hack/image-test.sh", &script, "TARGET="),
        target
    );
}

#[test]
fn the_image_user_is_the_one_the_deployment_requires() {
    let stage = read("Containerfile.local");
    assert!(
        stage.lines().any(|l| l == "USER 65532:65532"),
        "the image runs as 65532:65532"
    );
    let deployment: Value = serde_saphyr::from_str(&read("config/manager/deployment.yaml"))
        .expect("config/manager/deployment.yaml parses");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["runAsUser"], 65532);
    assert_eq!(container["securityContext"]["runAsGroup"], 65532);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // names for the ids, for anything that looks the user up
    let passwd = read("image/rootfs/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "image/rootfs/etc/passwd names uid 65532: {passwd}"
    );
    let group = read("image/rootfs/etc/group");
    assert!(
        group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "image/rootfs/etc/group names gid 65532: {group}"
    );
}
