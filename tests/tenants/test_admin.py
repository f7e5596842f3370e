"""The admin index speaks RunLedger: its own name in the header and title, API keys spelled as such."""

from __future__ import annotations


def test_admin_index_is_branded_and_names_api_keys(client, staff_user, db):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    html = client.get("/admin/").content.decode()
    assert "RunLedger administration" in html and "Django administration" not in html
    assert "<title>Site administration | RunLedger admin</title>" in html
    assert ">API keys</a>" in html and "Api keys" not in html
