//! The expansion names everything by absolute path: it compiles in a
//! `#![no_implicit_prelude]` module and with the switchyard crate renamed
//! (in the style of tarpc's `proc_macro_hygene.rs`).

/// The macro under `#![no_implicit_prelude]`: no `String`, `Option`, `Box`,
/// `Send`, `derive`... in scope.
pub mod no_prelude {
    #![no_implicit_prelude]

    /// Echoes.
    #[::switchyard::service]
    pub trait Echo {
        /// Returns `text`.
        async fn echo(&self, text: ::std::string::String) -> ::std::string::String;
        /// Does nothing.
        async fn ping(&self);
        /// Logs `line`; no reply.
        #[switchyard(oneway, compress = false)]
        async fn log(&self, line: ::std::string::String);
        /// Divides, failing on zero.
        async fn div(&self, a: i64, b: i64) -> ::std::result::Result<i64, ::std::string::String>;
        /// Streams the words of `text`, each echoed as it comes.
        async fn words(
            &self,
            words: ::switchyard::Streaming<::std::string::String>,
        ) -> ::switchyard::Streaming<::std::string::String>;
        /// Counts `n` down, or refuses.
        async fn countdown(
            &self,
            n: u32,
        ) -> ::std::result::Result<::switchyard::Streaming<u32>, ::switchyard::Status>;
        /// How many words came.
        async fn tally(
            &self,
            words: ::switchyard::Streaming<::std::string::String>,
        ) -> ::std::result::Result<u64, ::switchyard::Status>;
    }

    /// An implementation, also without the prelude.
    #[derive(Debug)]
    pub struct Impl;

    impl Echo for Impl {
        async fn echo(&self, text: ::std::string::String) -> ::std::string::String {
            text
        }

        async fn ping(&self) {}

        async fn log(&self, _line: ::std::string::String) {}

        async fn div(&self, a: i64, b: i64) -> ::std::result::Result<i64, ::std::string::String> {
            if b == 0 {
                ::std::result::Result::Err(::std::string::ToString::to_string("zero"))
            } else {
                ::std::result::Result::Ok(a / b)
            }
        }

        async fn words(
            &self,
            words: ::switchyard::Streaming<::std::string::String>,
        ) -> ::switchyard::Streaming<::std::string::String> {
            words
        }

        async fn countdown(
            &self,
            n: u32,
        ) -> ::std::result::Result<::switchyard::Streaming<u32>, ::switchyard::Status> {
            ::std::result::Result::Ok(::switchyard::Streaming::from_iter(
                <::std::ops::Range<u32> as ::std::iter::Iterator>::rev(0..n),
            ))
        }

        async fn tally(
            &self,
            _words: ::switchyard::Streaming<::std::string::String>,
        ) -> ::std::result::Result<u64, ::switchyard::Status> {
            ::std::result::Result::Ok(0)
        }
    }
}

/// The crate renamed with `extern crate`, named through `crate = "..."`.
pub mod renamed {
    extern crate switchyard as renamed;

    /// Echoes.
    #[renamed::service(crate = "renamed")]
    pub trait Echo {
        /// Returns `text`.
        async fn echo(&self, text: String) -> String;
    }
}

/// Both at once.
pub mod renamed_no_prelude {
    #![no_implicit_prelude]

    extern crate switchyard as renamed;

    /// Counts.
    #[renamed::service(crate = "renamed", name = "Counter2")]
    pub trait Counter {
        /// The count.
        async fn get(&self) -> u64;
    }
}

fn assert_service<S: switchyard::__private::Service + Clone + std::fmt::Debug>(service: &S) {
    let _ = service.descriptor();
}

#[test]
fn the_expansions_are_usable() {
    assert_service(&no_prelude::EchoServer::new(no_prelude::Impl));
    assert_eq!(no_prelude::ECHO_DESCRIPTOR.methods.len(), 7);
    let log = &no_prelude::ECHO_DESCRIPTOR.methods[2];
    assert!(log.oneway && !log.compress);
    let words = &no_prelude::ECHO_DESCRIPTOR.methods[4];
    assert!(words.client_streaming && words.server_streaming);
    assert_eq!(
        words.signature,
        "words(Streaming<::std::string::String>) -> Streaming<::std::string::String>"
    );
    let countdown = &no_prelude::ECHO_DESCRIPTOR.methods[5];
    assert!(!countdown.client_streaming && countdown.server_streaming);
    let tally = &no_prelude::ECHO_DESCRIPTOR.methods[6];
    assert!(tally.client_streaming && !tally.server_streaming);
    assert_eq!(
        no_prelude::ECHO_DESCRIPTOR.methods[3].signature,
        "div(i64,i64) -> ::std::result::Result<i64,::std::string::String>"
    );
    assert_eq!(renamed::ECHO_DESCRIPTOR.methods[0].full_name, "Echo.echo");
    assert_eq!(renamed_no_prelude::COUNTER_DESCRIPTOR.name, "Counter2");
    let _: fn(switchyard::Channel) -> renamed::EchoClient = renamed::EchoClient::new;
    let _: fn(switchyard::Channel) -> renamed_no_prelude::CounterClient =
        renamed_no_prelude::CounterClient::new;
}
