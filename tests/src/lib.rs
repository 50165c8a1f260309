//! Test harness: a real KalamDB server and the fakes of the third parties it talks
//! to, each speaking the real protocol over loopback. One module per part.

pub mod browser;
pub mod oidc;
pub mod s3;
pub mod server;
pub mod ws;

pub use browser::Browser;
pub use oidc::{FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeIssuer, IdTokenFault, oidc_fixture};
pub use s3::FakeS3;
pub use server::{ROOT_PASSWORD, TestServer, basic, kalamdb_bin, pw, rows, test_config, tests_dir};
pub use ws::{WsClient, WsEnd};
