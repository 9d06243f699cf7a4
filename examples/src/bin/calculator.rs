//! A calculator service and its client.
//!
//! ```text
//! calculator serve [--tcp 127.0.0.1:7000]
//! calculator call add 2 3
//! calculator call div 7 0
//! calculator call log "hello"
//! ```
//! `call` connects by name (`calculator`) unless `--to <url>` is given.

use std::process::ExitCode;

use switchyard::Server;
use switchyard_examples::{Arithmetic, CalculatorClient, CalculatorServer};

const USAGE: &str = "usage:\n  calculator serve [--tcp ADDR]\n  calculator call [--to TARGET] add|div A B\n  calculator call [--to TARGET] log LINE";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).await,
        Some("call") => call(&args[1..]).await,
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &[String]) -> Result<(), String> {
    let mut builder = Server::builder().add_service(CalculatorServer::new(Arithmetic));
    match args {
        [] => {}
        [flag, addr] if flag == "--tcp" => builder = builder.tcp(addr.clone()),
        _ => return Err(USAGE.to_owned()),
    }
    let server = builder.start().await.map_err(|s| s.to_string())?;
    println!("serving Calculator on {}", server.endpoints().join(", "));
    server.run_until_signal().await;
    Ok(())
}

async fn call(args: &[String]) -> Result<(), String> {
    let (target, args) = match args {
        [flag, target, rest @ ..] if flag == "--to" => (target.as_str(), rest),
        rest => ("calculator", rest),
    };
    let client = CalculatorClient::connect(target)
        .await
        .map_err(|s| s.to_string())?;
    let number = |text: &String| {
        text.parse::<i64>()
            .map_err(|_| format!("{text:?} is not a whole number\n{USAGE}"))
    };
    match args {
        [op, a, b] if op == "add" => {
            let sum = client
                .add(number(a)?, number(b)?)
                .await
                .map_err(|s| s.to_string())?;
            println!("{sum}");
        }
        [op, a, b] if op == "div" => {
            match client
                .div(number(a)?, number(b)?)
                .await
                .map_err(|s| s.to_string())?
            {
                Ok(quotient) => println!("{quotient}"),
                Err(err) => return Err(format!("error: {err}")),
            }
        }
        [op, line] if op == "log" => {
            client.log(line.clone()).await.map_err(|s| s.to_string())?;
            println!("sent");
        }
        _ => return Err(USAGE.to_owned()),
    }
    eprintln!("transport {}", client.selection());
    Ok(())
}
