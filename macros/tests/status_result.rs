//! Methods returning `Result<T, Status>`: the handler's status is the
//! call's status (code and message as set), and the client method returns
//! `Result<T, Status>` rather than a nested result.

use switchyard::transport::memory;
use switchyard::{Channel, Code, Server, Status};

/// Accounts whose handlers answer with a status of their own.
// Both spellings of the type on purpose: a path ending in `Status` counts.
#[allow(unused_qualifications)]
#[switchyard::service]
pub trait Accounts {
    /// The balance, or NOT_FOUND.
    async fn balance(&self, account: String) -> Result<u64, switchyard::Status>;
    /// Closes an account, or FAILED_PRECONDITION.
    async fn close(&self, account: String) -> Result<(), Status>;
}

struct Bank;

impl Accounts for Bank {
    async fn balance(&self, account: String) -> Result<u64, Status> {
        match account.as_str() {
            "alice" => Ok(120),
            other => Err(Status::not_found(format!(
                "no account {other:?}; list accounts with Accounts.list"
            ))),
        }
    }

    async fn close(&self, account: String) -> Result<(), Status> {
        if account == "alice" {
            return Err(Status::failed_precondition(
                "alice still has a balance of 120; pay it out first",
            ));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_status_reaches_the_caller_as_set() {
    let server = Server::builder()
        .add_service(AccountsServer::new(Bank))
        .no_unix()
        .unpublished()
        .message_queues(false)
        .start()
        .await
        .unwrap();
    let (client_end, server_end) = memory::pair();
    server.serve_link(server_end);
    let accounts = AccountsClient::new(Channel::builder().connect_link(client_end).await.unwrap());

    let balance: Result<u64, Status> = accounts.balance("alice".into()).await;
    assert_eq!(balance.unwrap(), 120);
    let missing = accounts.balance("bob".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "no account \"bob\"; list accounts with Accounts.list"
    );
    let refused = accounts.close("alice".into()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("pay it out"), "{refused}");
    accounts.close("carol".into()).await.unwrap();
    server.shutdown().await;
}
