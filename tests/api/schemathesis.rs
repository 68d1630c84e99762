//! carepay against its own document, by schemathesis (PyPI): every check it has (no 5xx,
//! every response as documented, schema-valid requests accepted, schema-violating ones
//! refused, auth enforced, stateful sequences) on every operation, on SQLite and on
//! PostgreSQL. The few operations where a schema-valid request may still be refused for a
//! rule no schema states are listed, with the rule, in `tests/schemathesis/schemathesis.toml`.

use std::process::Command;

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(schemathesis_finds_no_server_error_and_no_mismatch_with_the_document);

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/schemathesis.toml");
/// Generated cases per operation and phase: enough to cover every parameter's edges and a
/// few random ones, few enough that one backend's run stays around a minute.
const MAX_EXAMPLES: &str = "15";
/// Fixed, so a failure seen in CI is the one seen on a developer's machine.
const SEED: &str = "20261128";

async fn schemathesis_finds_no_server_error_and_no_mismatch_with_the_document(app: TestApp) {
    // As a module of the python3 the other interop tests use, whatever is on PATH.
    let version = Command::new("python3").args(["-m", "schemathesis.cli", "--version"]).output();
    match version {
        Ok(output) if output.status.success() && String::from_utf8_lossy(&output.stdout).contains(" 4.") => {}
        other => panic!(
            "this test needs schemathesis 4 for python3 (`pip install schemathesis`; .ci/run installs it): {other:?}"
        ),
    }
    let schema = format!("{}/openapi.json", app.address);
    let auth = format!("Authorization: Bearer {}", app.root_token);
    // schemathesis keeps caches in its working directory: a scratch one, not the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .current_dir(&cwd)
            .args(["-m", "schemathesis.cli", "--config-file", CONFIG, "run", &schema, "-H", &auth, "--checks", "all"])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED, "--request-timeout", "30"])
            .args(["--generation-database", "none", "--no-color", "--output-truncate", "false"])
            .output()
    })
    .await
    .unwrap()
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "schemathesis found problems:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let number = |pattern: &str| -> usize {
        let found =
            regex::Regex::new(pattern).unwrap().captures(&stdout).unwrap_or_else(|| panic!("{pattern}: {stdout}"));
        found[1].parse().unwrap()
    };
    let operations = serde_json::to_value(carepay::http::openapi()).unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(number(r"Tested: (\d+)"), operations, "not every operation was tested:\n{stdout}");
    let generated = number(r"(\d+) generated, (?:\d+ passed)");
    assert!(generated >= operations * 10, "only {generated} cases:\n{stdout}");
}
