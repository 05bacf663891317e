from evosuite.cli import main

main()
