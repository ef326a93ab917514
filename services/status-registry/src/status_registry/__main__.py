from status_registry.app import main

main()
