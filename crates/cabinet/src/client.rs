//! paho conventions the agent shares with the server's own connection: the broker URL
//! schemes owners write, and which connection errors mean "wrong login".

use paho_mqtt as paho;

/// paho speaks `tcp://`, `ssl://`, `ws://`, `wss://`; owners often write `mqtt(s)://`.
pub fn paho_uri(uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("mqtts://") {
        format!("ssl://{rest}")
    } else if let Some(rest) = uri.strip_prefix("mqtt://") {
        format!("tcp://{rest}")
    } else {
        uri.to_owned()
    }
}

/// True when the broker answered and refused the user name and password (MQTT 3.1.1
/// return codes 4 and 5, or their MQTT 5 reason codes).
pub fn login_refused(e: &paho::Error) -> bool {
    use paho::errors::ConnectReturnCode as Code;
    match e {
        paho::Error::ConnectReturn(code) => {
            matches!(code, Code::BadUserNameOrPassword | Code::NotAuthorized)
        }
        paho::Error::ReasonCode(code) => matches!(
            code,
            paho::ReasonCode::BadUserNameOrPassword | paho::ReasonCode::NotAuthorized
        ),
        _ => false,
    }
}
