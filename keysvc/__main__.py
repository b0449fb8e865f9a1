from keysvc.cli import main

main()
