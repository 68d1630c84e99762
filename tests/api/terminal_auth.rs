//! The terminal signature check the gRPC transport builds on: only the active key of an
//! active terminal verifies.

use carepay::directory::TerminalAuthError;
use carepay::domain::ids::TerminalId;
use reqwest::StatusCode;
use ring::signature::Ed25519KeyPair;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(only_the_current_key_of_an_active_terminal_is_accepted);

async fn verdict(app: &TestApp, terminal: &str, key: &Ed25519KeyPair) -> Result<(), TerminalAuthError> {
    let message = b"POST\n/carepay.terminal.v1.Terminal/Pay\n...";
    let signature = key.sign(message);
    let id = TerminalId::parse(terminal).unwrap();
    match app.app.authenticate_terminal(&id, message, signature.as_ref()).await {
        Ok(found) => {
            assert_eq!(found.id, id);
            Ok(())
        }
        Err(Ok(reason)) => Err(reason),
        Err(Err(error)) => panic!("internal error: {error}"),
    }
}

async fn only_the_current_key_of_an_active_terminal_is_accepted(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (old_pair, old_key) = terminal_key_pair();
    let (new_pair, new_key) = terminal_key_pair();
    let (stranger, _) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &old_key).await;

    assert_eq!(verdict(&app, &terminal, &old_pair).await, Ok(()));
    assert_eq!(verdict(&app, &terminal, &stranger).await, Err(TerminalAuthError::BadSignature));
    let unknown = format!("trm_{}", "0".repeat(32));
    assert_eq!(verdict(&app, &unknown, &old_pair).await, Err(TerminalAuthError::UnknownTerminal));

    app.post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": new_key}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(verdict(&app, &terminal, &old_pair).await, Err(TerminalAuthError::BadSignature), "old key refused");
    assert_eq!(verdict(&app, &terminal, &new_pair).await, Ok(()));

    app.post(&format!("/v1/terminals/{terminal}/suspend"), root, json!(null)).await.expect(StatusCode::OK);
    assert_eq!(verdict(&app, &terminal, &new_pair).await, Err(TerminalAuthError::Suspended));
    app.post(&format!("/v1/terminals/{terminal}/resume"), root, json!(null)).await.expect(StatusCode::OK);
    assert_eq!(verdict(&app, &terminal, &new_pair).await, Ok(()));
}
