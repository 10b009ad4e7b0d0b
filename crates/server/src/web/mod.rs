//! The pages people see: signing in, recovery by email, the account area, the operators'
//! console, the developer portal and playground, the practices' integration
//! directory and the demo pages. Each area exports its `routes()`.

pub mod account;
pub mod api_reference;
pub mod console;
pub mod demo;
pub mod developers;
pub mod directory;
pub mod login;
pub mod passkeys;
pub mod playground;
pub mod recovery;
pub mod second_factor;

use axum::routing::{get, post};

use crate::http::pages;
use crate::http::routes::Routes;

/// Every page, and the stylesheets they load.
pub fn routes() -> Routes {
    Routes::new()
        .route("/", get(login::home))
        .route("/login", get(login::get).post(login::post))
        .route(
            crate::http::extract::SECOND_FACTOR_PAGE,
            get(second_factor::get).post(second_factor::post),
        )
        .route("/logout", post(login::logout))
        .route(
            crate::services::mail::FORGOT_PATH,
            get(recovery::forgot).post(recovery::request),
        )
        .route(
            crate::services::mail::RESET_PATH,
            get(recovery::reset_form).post(recovery::reset),
        )
        .route(
            crate::services::mail::VERIFY_PATH,
            get(recovery::verify_form).post(recovery::verify),
        )
        .route("/integrations", get(directory::page))
        .route(
            "/integrations/connect",
            get(directory::confirm_connect).post(directory::connect),
        )
        .route(
            "/integrations/disconnect",
            get(directory::confirm_disconnect).post(directory::disconnect),
        )
        .route("/demo/connect", get(demo::connect))
        .route("/demo/callback", get(demo::callback))
        .route("/demo/smart-launch", get(demo::smart_launch))
        .route("/static/healthgate.css", get(pages::stylesheet))
        .route("/static/brand.css", get(pages::brand_stylesheet))
        .route("/static/healthgate.js", get(pages::script))
        .route("/static/favicon.svg", get(pages::favicon))
        .route("/favicon.ico", get(pages::favicon))
        .merge(passkeys::routes())
        .merge(account::routes())
        .merge(developers::routes())
        .merge(api_reference::routes())
        .merge(playground::routes())
        .merge(console::routes())
}
