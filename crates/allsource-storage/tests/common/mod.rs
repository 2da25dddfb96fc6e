//! Helpers shared by the storage tests.

#![allow(dead_code)]

pub mod fixture;
