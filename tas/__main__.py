from tas.cli import console

console()
