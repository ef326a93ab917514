from orders.app import main

main()
