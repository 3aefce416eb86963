from lowrank_lab_cli.main import cli

cli(prog_name="lowrank-lab")
