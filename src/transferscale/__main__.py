from transferscale.cli import app

app(prog_name="transferscale")
