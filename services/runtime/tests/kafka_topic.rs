//! The topic a producer owns, created with its partition count against the real Kafka broker: once,
//! an existing topic left as it is, and an unreachable broker reported as an error in bounded time
//! (order retries it in the background).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shop_runtime::kafka::{TopicState, ensure_topic};
use shop_testkit::{free_port, fresh_name, kafka_bootstrap};

#[tokio::test]
async fn a_topic_is_created_with_its_partitions_once_and_an_existing_one_is_left_alone() {
    let bootstrap = kafka_bootstrap();
    let topic = fresh_name("topic-");
    assert_eq!(
        ensure_topic(&bootstrap, &topic, 3).await.unwrap(),
        TopicState::Created
    );
    assert_eq!(
        ensure_topic(&bootstrap, &topic, 5).await.unwrap(),
        TopicState::Existed(3),
        "an existing topic keeps its partitions"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_in_bounded_time() {
    // No broker: a port that was free a moment ago.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let r = tokio::time::timeout(
        Duration::from_secs(40),
        ensure_topic(&nowhere, &fresh_name("topic-"), 1),
    )
    .await
    .expect("ensure_topic must give up within its own timeouts");
    assert!(r.is_err(), "{r:?}");
}
