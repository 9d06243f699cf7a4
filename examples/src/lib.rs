//! Services shared by the example programs.

use serde::{Deserialize, Serialize};

/// The README's Rust blocks, compiled as doctests (`cargo test --doc -p
/// switchyard-examples`), so the quick start stays true as written.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Why a division failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
    /// The result does not fit in an i64.
    Overflow,
}

impl std::fmt::Display for MathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DivideByZero => f.write_str("division by zero"),
            Self::Overflow => f.write_str("overflow"),
        }
    }
}

/// A calculator, the example every RPC framework owes its users.
#[switchyard::service]
pub trait Calculator {
    /// `a + b`, wrapping on overflow.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or why not.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Logs a line on the server; returns as soon as the call is sent.
    #[switchyard(oneway)]
    async fn log(&self, line: String);
    /// The sum of `data`'s bytes and its length. A large `data` travels
    /// through a memory-mapped region on shared memory, and the server
    /// reads it there without a copy.
    async fn checksum(&self, data: switchyard::Bytes) -> (u64, u64);
}

/// The calculator the examples serve.
#[derive(Debug, Default)]
pub struct Arithmetic;

impl Calculator for Arithmetic {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivideByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }

    async fn log(&self, line: String) {
        println!("[calculator pid {}] log: {line}", std::process::id());
    }

    async fn checksum(&self, data: switchyard::Bytes) -> (u64, u64) {
        let sum = data.iter().map(|&b| u64::from(b)).sum();
        (sum, data.len() as u64)
    }
}

pub mod chat;
pub mod cluster;
pub mod files;
