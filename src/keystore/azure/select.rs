//! Credential selection: which token source a deployment uses, chosen once at start-up
//! from the config file's credentials and the environment.

use super::certificate::ClientCertificate;
use super::credentials::{IMDS_ENDPOINT, Source};
use super::options::{AzureCredentials, AzureOptions};

/// Picks the token source the config and environment call for (`kes-azure-keystore.md` §1):
/// client secret; managed identity (App Service endpoint when its variables are set, else
/// IMDS); or the default chain — environment client secret, then environment client
/// certificate, then workload identity, then managed identity. The choice is made once,
/// here, so a deployment always uses the same credential and says which in its banner. A
/// certificate is read and checked here: a broken one fails start-up instead of silently
/// falling through to the next credential.
pub fn select_source(
    creds: &AzureCredentials,
    o: &AzureOptions,
    authority: &str,
) -> Result<Source, String> {
    let nonempty = |s: &Option<String>| {
        s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(String::from)
    };
    let managed = |client_id: Option<String>| match (&o.identity_endpoint, &o.identity_header) {
        (Some(e), Some(h)) => {
            Source::AppService { endpoint: e.clone(), header: h.clone(), client_id }
        }
        _ => Source::Imds {
            endpoint: o.imds_endpoint_override.clone().unwrap_or_else(|| IMDS_ENDPOINT.to_string()),
            client_id,
        },
    };
    match creds {
        AzureCredentials::ClientSecret { tenant_id, client_id, client_secret } => {
            if tenant_id.trim().is_empty()
                || client_id.trim().is_empty()
                || client_secret.is_empty()
            {
                return Err("azure: credentials need tenant_id, client_id and client_secret".into());
            }
            Ok(Source::ClientSecret {
                authority: authority.to_string(),
                tenant: tenant_id.trim().to_string(),
                client_id: client_id.trim().to_string(),
                secret: client_secret.clone(),
            })
        }
        AzureCredentials::ManagedIdentity { client_id } => {
            Ok(managed(Some(client_id.trim().to_string()).filter(|c| !c.is_empty())))
        }
        AzureCredentials::Default => {
            let tenant = nonempty(&o.env_tenant_id);
            let client = nonempty(&o.env_client_id);
            let secret = o.env_client_secret.clone().filter(|s| !s.is_empty());
            if let (Some(tenant), Some(client_id), Some(secret)) = (&tenant, &client, secret) {
                return Ok(Source::ClientSecret {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    secret,
                });
            }
            if let (Some(path), Some(tenant), Some(client_id)) =
                (&o.env_client_certificate_path, &tenant, &client)
            {
                let cert = ClientCertificate::load(
                    path,
                    o.env_client_certificate_password.as_deref().map(|p| p.as_str()),
                    o.env_client_send_certificate_chain,
                )
                .map_err(|e| format!("azure: AZURE_CLIENT_CERTIFICATE_PATH: {e}"))?;
                return Ok(Source::ClientCertificate {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    cert: std::sync::Arc::new(cert),
                });
            }
            if let (Some(file), Some(tenant), Some(client_id)) =
                (&o.federated_token_file, &tenant, &client)
            {
                return Ok(Source::Workload {
                    authority: authority.to_string(),
                    tenant: tenant.clone(),
                    client_id: client_id.clone(),
                    token_file: file.clone(),
                });
            }
            Ok(managed(client))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use zeroize::Zeroizing;

    use super::*;

    #[test]
    fn options_from_the_environment() {
        let env = |k: &str| {
            Some(
                match k {
                    "SSL_CERT_FILE" => "/etc/kes/ca.pem",
                    "SSL_CERT_DIR" => "/a:/b",
                    "https_proxy" => "http://proxy:3128",
                    "NO_PROXY" => ".internal",
                    "AZURE_AUTHORITY_HOST" => "https://login.microsoftonline.us/",
                    "IDENTITY_ENDPOINT" => "http://127.0.0.1:41741/msi/token",
                    "IDENTITY_HEADER" => "hdr",
                    "AZURE_FEDERATED_TOKEN_FILE" => {
                        "/var/run/secrets/azure/tokens/azure-identity-token"
                    }
                    "AZURE_CLIENT_ID" => "cid",
                    "AZURE_TENANT_ID" => "tid",
                    "AZURE_CLIENT_SECRET" => "",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let o = AzureOptions::from_lookup(env);
        assert_eq!(o.extra_ca_files, vec![PathBuf::from("/etc/kes/ca.pem")]);
        assert_eq!(o.extra_ca_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(o.no_proxy.as_deref(), Some(".internal"));
        assert_eq!(o.identity_header.as_deref().map(|s| s.as_str()), Some("hdr"));
        assert!(o.env_client_secret.is_none(), "empty values count as unset");

        // Default chain: no env secret → workload identity.
        let s = select_source(&AzureCredentials::Default, &o, "https://a").unwrap();
        assert!(
            matches!(s, Source::Workload { ref tenant, ref client_id, .. } if tenant == "tid" && client_id == "cid")
        );
        // Managed identity prefers the App Service endpoint when its variables are set.
        let s = select_source(
            &AzureCredentials::ManagedIdentity { client_id: "mi".into() },
            &o,
            "https://a",
        )
        .unwrap();
        assert!(matches!(s, Source::AppService { client_id: Some(ref c), .. } if c == "mi"));
        // Env secret wins over workload identity.
        let mut o2 = o.clone();
        o2.env_client_secret = Some(Zeroizing::new("sec".into()));
        let s = select_source(&AzureCredentials::Default, &o2, "https://a").unwrap();
        assert!(matches!(s, Source::ClientSecret { .. }));
        // Nothing set → IMDS, with AZURE_CLIENT_ID as the user-assigned identity if present.
        let s =
            select_source(&AzureCredentials::Default, &AzureOptions::new(), "https://a").unwrap();
        assert!(
            matches!(s, Source::Imds { client_id: None, ref endpoint } if endpoint == IMDS_ENDPOINT)
        );
        let s = select_source(
            &AzureCredentials::ManagedIdentity { client_id: "".into() },
            &AzureOptions::new(),
            "https://a",
        )
        .unwrap();
        assert!(matches!(s, Source::Imds { client_id: None, .. }));
        let bad = AzureCredentials::ClientSecret {
            tenant_id: "t".into(),
            client_id: "".into(),
            client_secret: Zeroizing::new("s".into()),
        };
        assert!(select_source(&bad, &o, "https://a").is_err());
        assert!(!format!("{o2:?}").contains("sec\""), "{o2:?}");
        assert!(o.env_client_certificate_path.is_none() && !o.env_client_send_certificate_chain);

        let cert_env = |k: &str| {
            Some(
                match k {
                    "AZURE_CLIENT_CERTIFICATE_PATH" => "/etc/kes/azure.pem",
                    "AZURE_CLIENT_CERTIFICATE_PASSWORD" => " pw ",
                    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN" => "True",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let o = AzureOptions::from_lookup(cert_env);
        assert_eq!(o.env_client_certificate_path, Some(PathBuf::from("/etc/kes/azure.pem")));
        assert_eq!(o.env_client_certificate_password.as_deref().map(|s| s.as_str()), Some(" pw "));
        assert!(o.env_client_send_certificate_chain);
        assert!(!format!("{o:?}").contains(" pw "), "{o:?}");
        // Without tenant and client id the certificate is not a complete credential.
        let s = select_source(&AzureCredentials::Default, &o, "https://a").unwrap();
        assert!(matches!(s, Source::Imds { .. }));
        let o = AzureOptions::from_lookup(|k| {
            (k == "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN").then(|| "yes".to_string())
        });
        assert!(!o.env_client_send_certificate_chain, "only 1 or true");
    }
}
