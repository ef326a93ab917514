from notifier.app import main

main()
