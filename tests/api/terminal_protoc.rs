//! `proto/` as terminal vendors read it: compiled by standard `protoc` (Debian's
//! `protobuf-compiler`, as `.ci/run` installs it) into the same descriptors carepay serves,
//! with Java, C++ and Python code generated from it; and a Python terminal, its stubs made by
//! the protoc inside PyPI's `grpcio-tools`, taking payments from carepay over real gRPC.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use carepay::domain::ledger::AccountCode;
use prost::Message as _;
use prost_types::FileDescriptorSet;
use ring::rand::SecureRandom as _;
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(a_python_terminal_generated_by_protoc_pays_refunds_and_reverses_over_grpc);

const PROTO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
const PROTO_FILE: &str = "carepay/terminal/v1/terminal.proto";
const PYTHON_TERMINAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/terminal/python_terminal.py");
const WALLET: &str = "0021000000000004";

/// `protoc` from `PROTOC` (as prost-build reads it) or from PATH.
fn protoc() -> PathBuf {
    std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"))
}

/// Run `program` with `args`, failing the test with its output when it fails.
fn run(program: &Path, args: &[String], hint: &str) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}; {hint}", program.display()));
    assert!(
        output.status.success(),
        "{} {} failed: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A descriptor set with what only tells where things were written (comments, spans) cleared.
fn without_source_info(mut set: FileDescriptorSet) -> FileDescriptorSet {
    for file in &mut set.file {
        file.source_code_info = None;
    }
    set
}

#[test]
fn protoc_compiles_the_terminal_schema_into_the_descriptors_carepay_serves() {
    let out = tempfile::tempdir().unwrap();
    let descriptors = out.path().join("terminal.pb");
    let mut args =
        vec![format!("--proto_path={PROTO_ROOT}"), format!("--descriptor_set_out={}", descriptors.display())];
    for language in ["java", "cpp", "python"] {
        let dir = out.path().join(language);
        std::fs::create_dir(&dir).unwrap();
        args.push(format!("--{language}_out={}", dir.display()));
    }
    args.push(PROTO_FILE.to_owned());
    let version = run(&protoc(), &[String::from("--version")], "install protoc (Debian: protobuf-compiler)");
    run(&protoc(), &args, "");

    let by_protoc = FileDescriptorSet::decode(std::fs::read(&descriptors).unwrap().as_slice()).unwrap();
    let served = FileDescriptorSet::decode(carepay::grpc::proto::FILE_DESCRIPTOR_SET).unwrap();
    assert_eq!(
        without_source_info(by_protoc.clone()),
        without_source_info(served),
        "{} reads proto/ as carepay's build does",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let file = &by_protoc.file[0];
    assert_eq!(file.package(), "carepay.terminal.v1");
    let service = &file.service[0];
    assert_eq!(service.name(), "TerminalService");
    let outputs: Vec<(&str, &str, &str)> =
        service.method.iter().map(|method| (method.name(), method.input_type(), method.output_type())).collect();
    assert_eq!(
        outputs,
        vec![
            ("Pay", ".carepay.terminal.v1.PayRequest", ".carepay.terminal.v1.Payment"),
            ("CreateQrOrder", ".carepay.terminal.v1.CreateQrOrderRequest", ".carepay.terminal.v1.Payment"),
            ("GetPayment", ".carepay.terminal.v1.GetPaymentRequest", ".carepay.terminal.v1.Payment"),
            ("Refund", ".carepay.terminal.v1.RefundRequest", ".carepay.terminal.v1.Refund"),
            ("GetRefund", ".carepay.terminal.v1.GetRefundRequest", ".carepay.terminal.v1.Refund"),
            ("Reverse", ".carepay.terminal.v1.ReverseRequest", ".carepay.terminal.v1.Payment"),
        ],
        "the method paths and message names terminals already use on the wire"
    );
    let generated = |path: &str| out.path().join(path).is_file();
    assert!(generated("python/carepay/terminal/v1/terminal_pb2.py"));
    assert!(generated("cpp/carepay/terminal/v1/terminal.pb.cc"));
    assert!(generated("java/carepay/terminal/v1/Terminal.java"));
}

/// The Python packages the terminal needs, or a failure saying how to get them.
fn python_with_grpc() {
    let check = Command::new("python3").args(["-c", "import grpc, grpc_tools, cryptography"]).output();
    match check {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "the Python terminal needs `grpcio`, `grpcio-tools` and `cryptography` \
             (`pip install grpcio-tools cryptography`; .ci/run installs them): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("the Python terminal needs python3 on PATH: {error}"),
    }
}

/// A facility on `WALLET` with a terminal whose key is made from a seed the Python side can
/// use: (terminal id, base64 seed).
async fn terminal_with_seed(app: &TestApp) -> (String, String) {
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let base64 = base64::engine::general_purpose::STANDARD;
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "流虹社区助餐点", WALLET).await;
    let public_key = base64.encode(pair.public_key().as_ref());
    let terminal = app
        .post(
            "/v1/terminals",
            root,
            json!({"facility_id": facility, "label": "Python 收银台", "public_key": public_key}),
        )
        .await
        .id();
    (terminal, base64.encode(seed))
}

async fn a_python_terminal_generated_by_protoc_pays_refunds_and_reverses_over_grpc(app: TestApp) {
    python_with_grpc();
    let stubs = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec![
        String::from("-m"),
        String::from("grpc_tools.protoc"),
        format!("--proto_path={PROTO_ROOT}"),
        format!("--python_out={}", stubs.path().display()),
        format!("--grpc_python_out={}", stubs.path().display()),
        PROTO_FILE.to_owned(),
    ];
    run(Path::new("python3"), &args, "");
    let (terminal_id, seed) = terminal_with_seed(&app).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let stubs_dir = stubs.path().display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        run(Path::new("python3"), &[PYTHON_TERMINAL.to_owned(), stubs_dir, address, terminal_id, seed], "")
    })
    .await
    .unwrap();
    let out: Value = serde_json::from_slice(&output.stdout).expect("the terminal prints one JSON object");

    let pay = &out["pay"];
    assert_eq!(pay["status"], "PAYMENT_STATUS_SUCCEEDED", "{out:#}");
    assert_eq!(pay["method"], "PAYMENT_METHOD_PAYER_CODE");
    assert_eq!(pay["amount"], "12.50");
    assert_eq!(out["pay_again"]["payment_id"], pay["payment_id"], "the same request_id is the same payment");
    assert_eq!(out["pay_other_body"]["error"], "ALREADY_EXISTS", "{out:#}");
    assert_eq!(&out["get_payment"], pay);
    assert_eq!(out["get_payment_by_request"]["payment_id"], pay["payment_id"]);

    let refund = &out["refund"];
    assert_eq!(refund["status"], "REFUND_STATUS_SUCCEEDED", "{out:#}");
    assert_eq!(refund["amount"], "2.50");
    assert_eq!(refund["payment_id"], pay["payment_id"]);
    assert_eq!(&out["get_refund"], refund);

    let order = &out["create_qr_order"];
    assert_eq!(order["status"], "PAYMENT_STATUS_AWAITING_SCAN", "{out:#}");
    assert_eq!(order["method"], "PAYMENT_METHOD_DYNAMIC_QR");
    assert!(order["qr_payload"].as_str().is_some_and(|payload| !payload.is_empty()), "{out:#}");
    assert!(order["expires_at"].as_str().is_some_and(|at| at.ends_with("+08:00")), "{out:#}");
    assert_eq!(out["reverse_qr_order"]["status"], "PAYMENT_STATUS_REVERSED", "{out:#}");
    assert_eq!(out["reverse_qr_order"]["payment_id"], order["payment_id"]);

    assert_eq!(out["bad_amount"]["error"], "INVALID_ARGUMENT", "{out:#}");
    assert!(out["bad_amount"]["message"].as_str().unwrap_or_default().starts_with("AMOUNT_TOO_MANY_DECIMALS"));
    assert_eq!(out["signed_once"]["payment_id"], pay["payment_id"], "{out:#}");
    assert_eq!(out["replayed"]["error"], "UNAUTHENTICATED", "{out:#}");
    assert!(out["replayed"]["message"].as_str().unwrap_or_default().contains("nonce"), "{out:#}");

    // The books: 12.50 in, 2.50 back; the reversed QR order moved nothing.
    let account = AccountCode::parse(&format!("wallet:{WALLET}")).unwrap();
    let balance = app.app.store.account_totals(&account).await.unwrap().map(|totals| totals.balance_fen());
    assert_eq!(balance, Some(1_000));
    assert_eq!(app.sandbox.wallet(WALLET).unwrap().balance.to_string(), "10.00");
    assert_eq!(app.app.store.verify_ledger().await.unwrap(), vec![]);
}
