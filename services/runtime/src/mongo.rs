//! The MongoDB connection policy of the services that keep their documents there (product,
//! notification), in one place: the same timeouts, a client that connects lazily, one ping, and
//! the store prepared in the background ([`Readiness::prepare`]) so a MongoDB that is not there
//! yet makes the service wait unready instead of exiting.

use std::future::Future;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;

/// The MongoDB flags of a service, flattened into its `clap::Parser` so every Mongo service has
/// the same names, variables and URL default. The database's default differs per service, so
/// it is set with `mut_arg` on the service's parser:
///
/// ```
/// #[derive(clap::Parser)]
/// #[command(mut_arg("mongo_db", |a| a.required(false).default_value("product-service")))]
/// struct Args {
///     #[command(flatten)]
///     mongo: shop_runtime::mongo::MongoArgs,
/// }
/// let args = <Args as clap::Parser>::parse_from(["product"]);
/// assert_eq!(args.mongo.mongo_db, "product-service");
/// ```
#[derive(clap::Args, Clone, Debug)]
pub struct MongoArgs {
    /// MongoDB connection string.
    #[arg(
        long,
        env = "SHOP_MONGO_URL",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    pub mongo_url: String,

    /// MongoDB database.
    #[arg(long, env = "SHOP_MONGO_DB")]
    pub mongo_db: String,
}

impl MongoArgs {
    /// [`describe`] of these flags.
    pub async fn describe(&self) -> String {
        describe(&self.mongo_url, &self.mongo_db).await
    }
}

/// A client of `url` named `app` (shown in the server's logs). Connects lazily: this fails only
/// for a URL that cannot be parsed (or whose SRV record cannot be resolved). Defaults: 3 s to
/// connect, 5 s to select a server, unless the URL says otherwise.
pub async fn client(url: &str, app: &str) -> Result<Client, mongodb::error::Error> {
    let mut opts = ClientOptions::parse(url).await?;
    opts.app_name = Some(app.to_owned());
    opts.connect_timeout = Some(opts.connect_timeout.unwrap_or(Duration::from_secs(3)));
    opts.server_selection_timeout = Some(
        opts.server_selection_timeout
            .unwrap_or(Duration::from_secs(5)),
    );
    Client::with_options(opts)
}

/// Answers when the server does.
pub async fn ping(client: &Client) -> Result<(), mongodb::error::Error> {
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .map(|_| ())
}

/// `host:port,…/database` of a MongoDB URL and database, for logs and readiness (never the
/// URL itself: it may carry credentials).
pub async fn describe(url: &str, db: &str) -> String {
    match ClientOptions::parse(url).await {
        Ok(o) => {
            let hosts: Vec<String> = o.hosts.iter().map(ToString::to_string).collect();
            format!("{}/{db}", hosts.join(","))
        }
        Err(_) => format!("(unparsable URL)/{db}"),
    }
}

/// Runs `prepare` (the store's indexes) in the background until it works, and gates the
/// readiness check `mongodb` on it, then on a ping (see [`Readiness::prepare`]). Returns a token
/// cancelled once `prepare` succeeded.
pub fn prepare<P, PF>(
    readiness: &Readiness,
    target: String,
    client: &Client,
    prepare: P,
    stop: CancellationToken,
) -> CancellationToken
where
    P: Fn() -> PF + Send + 'static,
    PF: Future<Output = Result<(), String>> + Send,
{
    let client = client.clone();
    readiness.prepare(
        "mongodb",
        target,
        prepare,
        move || {
            let client = client.clone();
            async move { ping(&client).await.map_err(|e| e.to_string()) }
        },
        stop,
    )
}
