//! `kes policy …`, `kes identity info|ls`, `kes ls -i/-p`.

use crate::harness::{Fixture, json_field};

const ALLOW: [&str; 6] = [
    "/v1/key/create/app-*",
    "/v1/key/decrypt/app-*",
    "/v1/key/describe/app-*",
    "/v1/key/encrypt/app-*",
    "/v1/key/generate/app-*",
    "/v1/status",
];

#[test]
fn policies_are_listed_described_and_shown() {
    let fx = Fixture::start();
    assert_eq!(fx.admin(&["ls", "-p"]).run().ok(), "Policy\napp\nops\n");
    assert_eq!(fx.admin(&["ls", "--policy", "--json"]).run().ok(), "[\"app\",\"ops\"]\n");
    assert_eq!(fx.admin(&["policy", "ls"]).run().ok(), "Policy\napp\nops\n");
    assert_eq!(fx.admin(&["policy", "ls", "--json", "o*"]).run().ok(), "[\"ops\"]\n");

    let json = fx.admin(&["policy", "info", "--json", "app"]).run();
    let created = json_field(json.ok(), "created_at");
    assert_eq!(
        json.stdout,
        format!(
            "{{\"name\":\"app\",\"created_at\":\"{created}\",\"created_by\":\"{}\"}}\n",
            fx.admin_id
        )
    );
    let tty = fx.admin(&["policy", "info", "--json", "app"]).tty();
    assert_eq!(
        tty.stdout,
        format!(
            "{{\n  \"name\": \"app\",\n  \"created_at\": \"{created}\",\n  \"created_by\": \"{}\"\n}}\n",
            fx.admin_id
        )
    );
    let text = fx.admin(&["policy", "info", "app"]).run();
    let lines: Vec<&str> = text.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", text.stdout);
    assert_eq!(lines[0], "Name        app");
    assert!(lines[1].starts_with("Date        ") && lines[1].len() == 12 + 19, "{}", lines[1]);
    assert_eq!(lines[2], format!("Created by  {}", fx.admin_id));

    // Pipes get JSON (kms-go's Policy: rule maps, no name).
    let show = fx.admin(&["policy", "show", "app"]).run();
    let rules: Vec<String> = ALLOW.iter().map(|p| format!("\"{p}\":{{}}")).collect();
    assert_eq!(
        show.ok(),
        format!(
            "{{\"allow\":{{{}}},\"deny\":{{\"/v1/key/create/app-denied*\":{{}}}},\"created_at\":\"{created}\",\"created_by\":\"{}\"}}\n",
            rules.join(","),
            fx.admin_id
        )
    );
    let ops = fx.admin(&["policy", "show", "ops"]).run();
    assert_eq!(
        ops.ok(),
        format!(
            "{{\"allow\":{{\"/v1/metrics\":{{}}}},\"created_at\":\"{created}\",\"created_by\":\"{}\"}}\n",
            fx.admin_id
        )
    );
    // A terminal gets the rules as a list.
    let tty = fx.admin(&["policy", "show", "app"]).env("NO_COLOR", "1").tty();
    let mut expected = String::from("Allow:\n");
    for p in ALLOW {
        expected.push_str(&format!("  · {p}\n"));
    }
    expected.push_str("Deny:\n  · /v1/key/create/app-denied*\n\nCreated at: ");
    assert!(tty.stdout.starts_with(&expected), "{}", tty.stdout);
    assert!(tty.stdout.ends_with(&format!("\nCreated by: {}\n", fx.admin_id)), "{}", tty.stdout);

    fx.admin(&["policy", "info", "nope"])
        .run()
        .fails_with("failed to describe policy: policy does not exist");
    fx.admin(&["policy", "show", "nope"])
        .run()
        .fails_with("failed to show policy: policy does not exist");
}

#[test]
fn identities_are_listed_and_described() {
    let fx = Fixture::start();
    let mut ids = [fx.admin_id.clone(), fx.user_id.clone()];
    ids.sort();
    assert_eq!(fx.admin(&["ls", "-i"]).run().ok(), format!("Identity\n{}\n{}\n", ids[0], ids[1]));
    assert_eq!(
        fx.admin(&["identity", "ls", "--json"]).run().ok(),
        format!("[\"{}\",\"{}\"]\n", ids[0], ids[1])
    );

    // Self-describe as the user: identity, policy, role, creator, rules.
    let me = fx.user(&["identity", "info"]).run();
    let lines: Vec<&str> = me.ok().lines().collect();
    assert_eq!(lines[0], format!("Identity    {}", fx.user_id));
    assert_eq!(lines[1], "Policy      app");
    assert!(lines[2].starts_with("Created At  "), "{}", lines[2]);
    assert_eq!(lines[3], "Role        User");
    assert_eq!(lines[4], format!("Created By  {}", fx.admin_id));
    assert_eq!(lines[5], "");
    assert_eq!(lines[6], "Allow:");
    assert_eq!(lines[7], format!("  · {}", ALLOW[0]));
    assert_eq!(lines.last().copied(), Some("  · /v1/key/create/app-denied*"));

    // Self-describe as the admin, and describing the user as the admin.
    let admin = fx.admin(&["identity", "info"]).run();
    let lines: Vec<&str> = admin.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", admin.stdout);
    assert_eq!(
        (lines[0], lines[2]),
        (format!("Identity    {}", fx.admin_id).as_str(), "Role        Admin")
    );
    let user = fx.admin(&["identity", "info", &fx.user_id]).run();
    let lines: Vec<&str> = user.ok().lines().collect();
    assert_eq!(lines[0], format!("Identity    {}", fx.user_id));
    assert_eq!(lines[1], "Policy      app");
    assert_eq!(lines[3], "Role        User");
    // A terminal shows the same lines (colours off here), and listings underline the header.
    let t = fx.user(&["identity", "info", "--color", "never"]).tty();
    assert_eq!((t.code, t.stdout.as_str()), (0, me.stdout.as_str()));
    let t = fx.admin(&["identity", "ls", "--color=never"]).tty();
    assert_eq!(t.stdout, format!("Identity\n{}\n{}\n", ids[0], ids[1]));
    let t = fx.admin(&["ls", "-p"]).tty();
    assert_eq!(t.stdout, "\x1b[4mPolicy\x1b[0m\napp\nops\n");
    let json = fx.admin(&["identity", "info", "--json"]).run();
    assert_eq!(json_field(json.ok(), "identity"), fx.admin_id);

    fx.admin(&["identity", "info", "0000"])
        .run()
        .fails_with("failed to describe identity: identity does not exist");
}
