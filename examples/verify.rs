//! Sends one check to kycq over RabbitMQ with `kycq::client` and prints its result: the Rust
//! half of the book's tutorial (docs/src/tutorial.md).
//!
//! ```text
//! cargo run --example verify
//! cargo run --example verify -- amqp://guest:guest@127.0.0.1:5672/%2f 110105197001019091
//! ```
//!
//! The first argument is the RabbitMQ URL, the second the ID number to check (default: the
//! sandbox's test identity that matches). A worker must be running.

use kycq::client::{Client, Request};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let id_number = args
        .next()
        .unwrap_or_else(|| "110105197001010011".to_owned());

    let client = Client::connect(&url).await?;
    let result = client
        .verify(Request {
            check: "mobile3".into(),
            name: "张三".into(),
            id_number,
            mobile: Some("13812345678".into()),
            ..Default::default()
        })
        .await?;
    println!(
        "{} {} {} {} billed {}",
        result.request_id,
        result.status,
        result.verdict.map_or("-", |v| v.as_str()),
        result.reason_code,
        result.billed.as_str()
    );
    client.close().await;
    Ok(())
}
