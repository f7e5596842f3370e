from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_empty_price_book(sender, using="default", **kwargs):
    # Runs after migrate and after a test flush, so every fresh database carries the shipped price book.
    from django.db import connections

    from .models import ModelPrice, ToolPrice
    from .services import price_book_seed_if_empty

    tables = set(connections[using].introspection.table_names())
    if ModelPrice._meta.db_table in tables and ToolPrice._meta.db_table in tables and using == "default":
        price_book_seed_if_empty()


class PricingConfig(AppConfig):
    name = "apps.pricing"
    label = "pricing"

    def ready(self):
        post_migrate.connect(_seed_empty_price_book, sender=self, dispatch_uid="pricing-seed-price-book")
