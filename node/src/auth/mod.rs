//! Authentication: password hashes, access tokens, refresh tokens, and the secret behind them.

pub mod extract;
pub mod password;
pub mod refresh;
pub mod secret;
pub mod tokens;
