//! Terminal nonces outlive a restart of carepay: a request accepted just before it is refused
//! as a replay just after, and a fresh request signed shortly before carepay started (well
//! inside the 300 s window) is served.

use carepay::grpc::client::{now_s, sign};
use carepay::grpc::proto;
use carepay::store::Backend;
use tonic::Code;

use crate::helpers::{spawn_app, spawn_app_with};
use crate::terminal_client::{connect, nonce, terminal};

fn lunch(request_id: &str) -> proto::PayRequest {
    proto::PayRequest {
        request_id: request_id.to_owned(),
        amount: String::from("8.00"),
        description: String::from("午餐"),
        source: Some(proto::pay_request::Source::PayerCode(String::from("013412345678900000"))),
    }
}

async fn nonces_survive_a_restart_and_requests_signed_before_it_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let till = terminal(&app, "0021000000000005").await;
    let (accepted_at_s, accepted_nonce) = (now_s(), nonce());
    let accepted = || sign(&till.id, &till.key, "Pay", lunch("before-restart"), accepted_at_s, &accepted_nonce);
    let paid = till.client.clone().pay(accepted()).await.expect("served before the restart").into_inner();
    assert_eq!(paid.status, proto::PaymentStatus::Succeeded as i32);
    // Signed now, a few seconds into the past, and sent only once carepay is up again.
    let signed_before_start = sign(&till.id, &till.key, "Pay", lunch("signed-before-start"), now_s() - 5, &nonce());
    let db = app.stop().await;

    let app = spawn_app_with(db, Default::default()).await;
    let mut client = connect(&app).await;
    let replay = client.pay(accepted()).await.expect_err("a replay inside the window");
    assert_eq!(replay.code(), Code::Unauthenticated, "{replay:?}");
    assert!(replay.message().contains("nonce already used"), "{replay:?}");
    let fresh = client.pay(signed_before_start).await.expect("signed before the start, inside the window");
    assert_eq!(fresh.get_ref().status, proto::PaymentStatus::Succeeded as i32);

    let pool = app.db.raw_pool().await;
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&pool).await.unwrap();
    assert_eq!(payments, 2, "the replay recorded nothing");
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM terminal_nonces").fetch_one(&pool).await.unwrap();
    assert_eq!(recorded, 2, "each accepted request's nonce is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_survive_a_restart_on_sqlite() {
    nonces_survive_a_restart_and_requests_signed_before_it_are_served(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_survive_a_restart_on_postgres() {
    nonces_survive_a_restart_and_requests_signed_before_it_are_served(Backend::Postgres).await;
}
