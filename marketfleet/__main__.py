from marketfleet.cli import main

main()
