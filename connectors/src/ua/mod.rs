//! The OPC UA connector (async-opcua client).
