//! `cargo run --example relay -- 127.0.0.1:8554 [user:password]`: publish with
//! `ffmpeg -re -f lavfi -i testsrc -c:v libx264 -f rtsp -rtsp_transport tcp rtsp://127.0.0.1:8554/test`,
//! read with `ffplay -rtsp_transport tcp rtsp://127.0.0.1:8554/test`.

mod handler;

use shardcast::server::{Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8554".to_owned());
    let credentials = std::env::args().nth(2);
    let paths = handler::Paths::default();
    let stats = paths.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        println!("publishers lost {} packets so far", stats.packets_lost());
    });
    let server = Server::start(ServerConfig::new(address.parse()?), move |context, _core| {
        let relay = handler::Relay::new(context, paths.clone());
        match credentials.as_deref().and_then(|c| c.split_once(':')) {
            Some((user, password)) => relay.with_credentials(user, password),
            None => relay,
        }
    })?;
    println!("relay listening on rtsp://{}", server.local_addr());
    server.wait();
    Ok(())
}
