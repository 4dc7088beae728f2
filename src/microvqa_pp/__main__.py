from microvqa_pp.cli import main

main()
