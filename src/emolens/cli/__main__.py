from emolens.cli import app

app()
