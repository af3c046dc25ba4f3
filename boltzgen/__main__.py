from boltzgen.cli import main

main()
