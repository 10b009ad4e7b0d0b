//! HTTP plumbing every area shares: the extractors every page starts from
//! (`SignedIn`, `Operator`, `CsrfForm`), the one mapping of errors to responses,
//! forms and their field errors, sessions with CSRF and `Origin` checks, the
//! client address, security headers and the access log, page rendering, and
//! `Routes` (a router that knows its paths). Nothing here knows a protocol
//! rule or a page's content.

pub mod error;
pub mod extract;
pub mod forms;
pub mod ip;
pub mod middleware;
pub mod pages;
pub mod routes;
pub mod session;
