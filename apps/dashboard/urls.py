"""Web UI routes."""

app_name = "dashboard"
urlpatterns: list = []
