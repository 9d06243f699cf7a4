//! A chat between terminals (a bidirectional stream): sends each line typed
//! to the stream server's room and prints what the others say.
//!
//! ```text
//! cargo run -p switchyard-examples --bin stream-server      # first, in another terminal
//! cargo run -p switchyard-examples --bin chat -- ann        # and `-- bob` in a third
//! ```
//! Ctrl-D (end of input) or Ctrl-C leaves the room.

use std::io::BufRead;
use std::process::ExitCode;

use switchyard_examples::chat::{ChatClient, RoomEvent};
use tokio::sync::mpsc;

const USAGE: &str = "usage: chat NAME";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match chat(name.clone()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chat: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn chat(name: String) -> Result<(), String> {
    let room = ChatClient::connect("chat").await.map_err(|status| {
        format!(
            "could not reach the Chat service: {status}\nstart it first: cargo run -p \
             switchyard-examples --bin stream-server"
        )
    })?;
    // Standard input is read on a thread of its own (reading it blocks); its
    // lines become the stream this side sends.
    let (typed, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if typed.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let outgoing = futures_util::stream::poll_fn(move |cx| lines.poll_recv(cx));
    let mut events = room
        .join(name.clone(), outgoing)
        .await
        .map_err(|s| s.to_string())?;
    // A refused name comes as the stream's error, before any event; the
    // first event says the room took this member in.
    while let Some(event) = events.message().await.map_err(|s| s.to_string())? {
        if let RoomEvent::Welcome { .. } = event {
            eprintln!(
                "joined as {name} over {}; type a line and Enter to send, Ctrl-D to leave",
                room.selection().transport
            );
        }
        println!("{event}");
    }
    eprintln!("left the room");
    Ok(())
}
