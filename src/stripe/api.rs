//! Calls to Stripe's API through async-stripe: Checkout Sessions for the pay page, and the
//! Product/Price/Payment Link trio for the seed's `/create-payment-link`. The base URL is
//! configurable (STRIPE_API_BASE) so tests and demos talk to a local fake.

use std::collections::HashMap;
use std::str::FromStr;

use stripe::{
    CheckoutSession, CheckoutSessionMode, Client, CreateCheckoutSession,
    CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionLineItemsPriceDataProductData, CreateCheckoutSessionPaymentIntentData,
    CreateCustomer, CreatePaymentLink, CreatePaymentLinkLineItems,
    CreatePaymentLinkPaymentIntentData, CreatePrice, CreateProduct, CreateRefund, Currency,
    Customer, CustomerId, IdOrCreate, PaymentIntentId, PaymentLink, Price, Product, Refund,
    RequestStrategy, StripeError,
};

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("Stripe is not configured: set STRIPE_SECRET_KEY")]
    NotConfigured,
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("could not reach Stripe: {0}")]
    Unreachable(String),
}

impl From<StripeError> for StripeApiError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(r) => Self::Refused {
                status: r.http_status,
                message: r.message.unwrap_or_else(|| format!("{:?}", r.error_type)),
            },
            other => Self::Unreachable(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct StripeApi {
    client: Option<Client>,
    pub allow_promotion_codes: bool,
}

/// A checkout for one bundle on one cabinet.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub machine_id: String,
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub product_name: String,
    pub bundle: String,
    pub success_url: String,
    pub cancel_url: String,
    /// Same key, same session: a double-tapped pay button never makes two.
    pub idempotency_key: String,
}

fn currency(code: &str) -> Result<Currency, StripeApiError> {
    Currency::from_str(code).map_err(|_| StripeApiError::Refused {
        status: 400,
        message: format!("unsupported currency {code}"),
    })
}

impl StripeApi {
    pub fn new(api_base: &str, secret_key: Option<&str>, allow_promotion_codes: bool) -> Self {
        let client = secret_key.map(|key| {
            Client::from_url(format!("{}/", api_base.trim_end_matches('/')).as_str(), key)
        });
        Self {
            client,
            allow_promotion_codes,
        }
    }

    fn client(&self) -> Result<&Client, StripeApiError> {
        self.client.as_ref().ok_or(StripeApiError::NotConfigured)
    }

    /// Creates a Checkout Session; returns its id and the URL to send the player to.
    pub async fn create_checkout(
        &self,
        c: &NewCheckout,
    ) -> Result<(String, String), StripeApiError> {
        let client = self
            .client()?
            .clone()
            .with_strategy(RequestStrategy::Idempotent(c.idempotency_key.clone()));
        let metadata = HashMap::from([
            ("machine_id".to_string(), c.machine_id.clone()),
            ("credits".to_string(), c.credits.to_string()),
            ("bundle".to_string(), c.bundle.clone()),
        ]);
        let mut params = one_item_session(
            &c.success_url,
            &c.cancel_url,
            &c.machine_id,
            metadata,
            (c.amount_minor, currency(&c.currency)?),
            &c.product_name,
        );
        params.allow_promotion_codes = Some(self.allow_promotion_codes);
        let session = CheckoutSession::create(&client, params).await?;
        let url = session.url.ok_or_else(|| {
            StripeApiError::Unreachable("Stripe returned a session without a URL".into())
        })?;
        Ok((session.id.to_string(), url))
    }

    /// A Product and a Price for `amount` (one credit at the cabinet's price).
    pub async fn create_price(
        &self,
        name: &str,
        machine_id: &str,
        amount: i64,
        currency_code: &str,
    ) -> Result<(String, String), StripeApiError> {
        let client = self.client()?;
        let mut product = CreateProduct::new(name);
        product.metadata = Some(HashMap::from([(
            "machine_id".to_string(),
            machine_id.to_string(),
        )]));
        let product = Product::create(client, product).await?;
        let product_id = product.id.to_string();
        let mut price = CreatePrice::new(currency(currency_code)?);
        price.product = Some(IdOrCreate::Id(&product_id));
        price.unit_amount = Some(amount);
        price.metadata = Some(HashMap::from([(
            "machine_id".to_string(),
            machine_id.to_string(),
        )]));
        let price = Price::create(client, price).await?;
        Ok((product_id, price.id.to_string()))
    }

    /// A Payment Link whose payments carry `machine_id` in their metadata.
    pub async fn create_payment_link(
        &self,
        price_id: &str,
        quantity: u64,
        machine_id: &str,
    ) -> Result<String, StripeApiError> {
        let client = self.client()?;
        let metadata = HashMap::from([("machine_id".to_string(), machine_id.to_string())]);
        let mut params = CreatePaymentLink::new(vec![CreatePaymentLinkLineItems {
            price: price_id.to_string(),
            quantity,
            adjustable_quantity: None,
        }]);
        params.metadata = Some(metadata.clone());
        params.payment_intent_data = Some(CreatePaymentLinkPaymentIntentData {
            metadata: Some(metadata),
            ..Default::default()
        });
        let link = PaymentLink::create(client, params).await?;
        Ok(link.url)
    }

    /// Refunds `amount` minor units (None: all that is left) of a PaymentIntent. The
    /// `charge.refunded` webhook then records it, as for a refund made in Stripe.
    pub async fn refund(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<String, StripeApiError> {
        let client = self
            .client()?
            .clone()
            .with_strategy(RequestStrategy::Idempotent(idempotency_key.to_owned()));
        let intent =
            PaymentIntentId::from_str(payment_intent).map_err(|_| StripeApiError::Refused {
                status: 400,
                message: format!("{payment_intent:?} is not a PaymentIntent id"),
            })?;
        let mut params = CreateRefund::new();
        params.payment_intent = Some(intent);
        params.amount = amount;
        let refund = Refund::create(&client, params).await?;
        Ok(refund.id.to_string())
    }

    /// A Customer with `email`, for a wallet's top-ups: Stripe sends its receipts there.
    /// Idempotent per wallet, so a retry never makes two.
    pub async fn create_customer(
        &self,
        email: &str,
        wallet_id: &str,
    ) -> Result<String, StripeApiError> {
        let client = self
            .client()?
            .clone()
            .with_strategy(RequestStrategy::Idempotent(format!(
                "customer-{wallet_id}-{email}"
            )));
        let mut params = CreateCustomer::new();
        params.email = Some(email);
        params.metadata = Some(HashMap::from([(
            "wallet_id".to_string(),
            wallet_id.to_string(),
        )]));
        let customer = Customer::create(&client, params).await?;
        Ok(customer.id.to_string())
    }

    /// A Checkout Session that tops up `wallet_id` by paying `amount_minor` (its metadata
    /// marks it as a top-up; what the wallet gets is stored by coinpulse, not read back).
    pub async fn create_topup_checkout(
        &self,
        t: &NewTopupCheckout<'_>,
    ) -> Result<(String, String), StripeApiError> {
        let client = self
            .client()?
            .clone()
            .with_strategy(RequestStrategy::Idempotent(t.idempotency_key.to_owned()));
        let (mark, value) = crate::wallets::TOPUP_MARK;
        let metadata = HashMap::from([
            (mark.to_string(), value.to_string()),
            ("wallet_id".to_string(), t.wallet_id.to_string()),
        ]);
        let mut params = one_item_session(
            t.success_url,
            t.cancel_url,
            t.wallet_id,
            metadata,
            (t.amount_minor, currency(t.currency)?),
            t.product_name,
        );
        params.allow_promotion_codes = Some(false);
        let customer = t
            .customer
            .map(CustomerId::from_str)
            .transpose()
            .map_err(|_| {
                StripeApiError::Unreachable("a stored Stripe customer id is malformed".into())
            })?;
        params.customer = customer;
        let session = CheckoutSession::create(&client, params).await?;
        let url = session.url.ok_or_else(|| {
            StripeApiError::Unreachable("Stripe returned a session without a URL".into())
        })?;
        Ok((session.id.to_string(), url))
    }
}

/// A payment-mode Checkout Session for one line item of `amount` named `name`; the
/// metadata goes on the session and its PaymentIntent.
fn one_item_session<'a>(
    success_url: &'a str,
    cancel_url: &'a str,
    reference: &'a str,
    metadata: HashMap<String, String>,
    (amount, currency): (i64, Currency),
    name: &str,
) -> CreateCheckoutSession<'a> {
    let mut params = CreateCheckoutSession::new();
    params.mode = Some(CheckoutSessionMode::Payment);
    params.success_url = Some(success_url);
    params.cancel_url = Some(cancel_url);
    params.client_reference_id = Some(reference);
    params.metadata = Some(metadata.clone());
    params.payment_intent_data = Some(CreateCheckoutSessionPaymentIntentData {
        metadata: Some(metadata),
        ..Default::default()
    });
    params.line_items = Some(vec![CreateCheckoutSessionLineItems {
        quantity: Some(1),
        price_data: Some(CreateCheckoutSessionLineItemsPriceData {
            currency,
            unit_amount: Some(amount),
            product_data: Some(CreateCheckoutSessionLineItemsPriceDataProductData {
                name: name.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    params
}

/// A wallet top-up to pay through Checkout.
pub struct NewTopupCheckout<'a> {
    /// The wallet's Stripe Customer (its email gets the receipt), if it has one.
    pub customer: Option<&'a str>,
    pub wallet_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub product_name: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    pub idempotency_key: &'a str,
}
