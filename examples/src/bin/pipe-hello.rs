//! The textbook parent/child pipe program, with switchyard: the child sends
//! a greeting over the pipes it inherited, the parent prints it.
//!
//! `cargo run -p switchyard-examples --bin pipe-hello`

use switchyard::process::{self, Spawner};

/// What the parent offers its child.
#[switchyard::service]
pub trait Greetings {
    /// Hands the parent a greeting.
    async fn greet(&self, text: String);
}

struct Printer;

impl Greetings for Printer {
    async fn greet(&self, text: String) {
        println!("parent {} received: {text}", std::process::id());
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if process::parent().is_some() {
        let parent = GreetingsClient::connect("greetings").await?;
        parent
            .greet(format!("hello from child {}", std::process::id()))
            .await?;
        return Ok(());
    }
    let mut child = Spawner::new(std::process::Command::new(std::env::current_exe()?))
        .add_service(GreetingsServer::new(Printer))
        .spawn()
        .await?;
    println!("child exited: {}", child.wait().await);
    Ok(())
}
